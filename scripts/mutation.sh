#!/usr/bin/env bash
# Mutation testing of the files whose numbers the studies rest on (docs/reliability.md, "Mutation testing").
# Not part of CI: a run takes tens of minutes. It installs the pinned mutmut into the current Python.
#
#   scripts/mutation.sh                    # every target: loop likelihoods evaluation kl
#   scripts/mutation.sh kl likelihoods     # some of them
#
# Each target is mutated in its own scratch copy of the work tree, ${MUTATION_DIR:-/tmp/fxvae-mutation}/<target>,
# and each mutant runs only the test files listed for its target below (with -x, one thread): the tests that
# state that file's behaviour, a few seconds a mutant. The last lines print "<target> <file>: killed/total".
# MUTATION_TESTS="tests/a.py tests/b.py::test_x" replaces the test list (of one target at a time), e.g. to
# score a file against the tests that existed before. A mutant's diff: cd into its scratch copy and run
# `python -m mutmut show <name>`.
set -euo pipefail

MUTMUT_VERSION=3.8.1
python -m pip install --quiet --disable-pip-version-check "mutmut==${MUTMUT_VERSION}"

root=$(cd "$(dirname "$0")/.." && pwd)
base=${MUTATION_DIR:-/tmp/fxvae-mutation}

declare -A file tests
file[loop]=fxvae/study/loop.py
tests[loop]="tests/test_loop.py"
file[likelihoods]=fxvae/measure/likelihoods.py
tests[likelihoods]="tests/test_likelihoods.py tests/test_likelihood_values.py"
file[evaluation]=fxvae/measure/evaluation.py
tests[evaluation]="tests/test_evaluation.py tests/test_evaluation_values.py"
file[kl]=fxvae/ops/kl.py
tests[kl]="tests/ops/test_kl.py tests/ops/test_kl_small.py tests/ops/test_kl_values.py"

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(loop likelihoods evaluation kl)

for target in "${targets[@]}"; do
    [ -n "${file[$target]:-}" ] || { echo "unknown target $target (loop, likelihoods, evaluation, kl)" >&2; exit 2; }
    dir=$base/$target
    rm -rf "$dir"
    mkdir -p "$dir"
    # The work tree as it is (tracked and untracked files, not the ignored ones), so uncommitted tests count.
    (cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dir")
    selection=""
    for t in ${MUTATION_TESTS:-${tests[$target]}}; do
        selection+="    $t"$'\n'
    done
    # The package's __init__ and every other module are copied unmutated; only the target file is mutated.
    cat >"$dir/setup.cfg" <<EOF
[mutmut]
source_paths=fxvae
only_mutate=${file[$target]}
also_copy=
    conftest.py
pytest_add_cli_args=
    -x
    -q
    -p
    no:cacheprovider
    -o
    addopts=
pytest_add_cli_args_test_selection=
$selection
EOF
    echo "== $target: mutating ${file[$target]} against ${MUTATION_TESTS:-${tests[$target]}}"
    (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m mutmut run --max-children "${MUTATION_JOBS:-1}") \
        >"$dir/run.log" 2>&1 || echo "mutmut run exited $? (see $dir/run.log)"
    (cd "$dir" && python -m mutmut results --all true) >"$dir/results.txt"
done

for target in "${targets[@]}"; do
    results=$base/$target/results.txt
    total=$(grep -c ': ' "$results" || true)
    killed=$(grep -c -E ': (killed|timeout)$' "$results" || true)
    echo "$target ${file[$target]}: $killed/$total killed"
    grep -v -E ': (killed|timeout)$' "$results" || true
done
