"""The report, in markdown: warnings, the AE against its VAEs (where the records measured it), what was run, the
table of starts with its verdict, and the pictures. Made from the records alone (:mod:`fxvae.study.records`), so
that ``fxvae.study.read(folder).to_markdown()`` writes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fxvae.study.ae_vs_vae import BEYOND, AeVsVae, columns
from fxvae.study.formats import epoch_text, mean_sd, mean_sd_sig, times
from fxvae.study.plots import AE_VS_VAE_FIGURES
from fxvae.study.records import NEAR_NATS, Records
from fxvae.study.verdict import verdict


def markdown(records: Records, figures: Sequence[str] = ()) -> str:
    """The report: warnings, the AE against its VAEs (where the records measured it, with its pictures among
    ``figures``), what was run, the table of starts, its verdict, and the other ``figures`` (file names).

    >>> text = markdown(Records({"model": "MLP", "options": {"starts": ["scratch", "warm"]}}, []))
    >>> text.splitlines()[0], "## What was run" in text
    ("# MLP: the AE's VAE against one trained from scratch", True)
    """
    lines = [f"# {_title(records)}", "", *_warnings(records)]
    if records.has_axes:
        lines += _ae_vs_vae_section(records, [f for f in figures if f in AE_VS_VAE_FIGURES])
        figures = [f for f in figures if f not in AE_VS_VAE_FIGURES]
    lines += ["## What was run", ""]
    lines += [f"- {line}" for line in _describe(records.config, records.stopped)]
    lines += ["", "## Which VAE start" if records.has_axes else "## Results", ""]
    lines += _starts_table(records)
    lines += ["", "### Verdict: which start" if records.has_axes else "## Verdict", ""]
    lines += [f"- {line}" for line in verdict(records)]
    if figures:
        lines += ["", "## Pictures", ""]
        for name in figures:
            lines += [f"![{name}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _title(records: Records) -> str:
    model = records.config.get("model", "autoencoder")
    if records.has_axes:
        return f"{model}: the AE against its VAEs"
    what = "discrete-latent model" if records.discrete else "VAE"
    return f"{model}: the AE's {what} against one trained from scratch"


def _warnings(records: Records) -> list[str]:
    warnings = records.config.get("warnings") or []
    if not warnings:
        return []
    return ["## Warnings", "", *(f"- {warning}" for warning in warnings), ""]


_MSE = (
    "MSE (eval) is the mean squared error per element between the held-out data and the reconstruction's "
    "mean, in the data's units, in eval mode ({})."
)


def _starts_table(records: Records) -> list[str]:
    """What the columns of the table of starts are, then the table: a row per start, mean ± sd over the seeds."""
    final_k = records.config.get("options", {}).get("final_k", "?")
    near = f"epochs to within {NEAR_NATS:g} nat of scratch's final {records.measure}"
    if records.discrete:
        said = (
            "Held-out values in nats per sample, mean ± sd over the seeds, the final ones measured after the "
            "last epoch. The distortion is the reconstruction term of the quantised model; its -ELBO adds the "
            "codes' KL against a uniform prior, positions x log K. Rate in bits per sample; perplexity (the "
            "exponential of the codes' entropy) and codes used (the share of the codebook that occurs) describe "
            "the codebook's use over the held-out data. The AE row holds its reconstruction term. "
            + _MSE.format("each quantised model on its codes, the AE on its code")
        )
        middle = [
            "distortion epoch 0",
            "distortion final",
            "MSE (eval)",
            "-ELBO final",
            "bits/sample",
            "perplexity",
            "codes used (%)",
        ]
    else:
        said = (
            "Held-out values in nats per sample, mean ± sd over the seeds, the final ones measured after the "
            "last epoch. -ELBO is measured with beta = 1 whatever the training used; NLL is the "
            f"importance-weighted bound with k = {final_k}. The AE row holds its reconstruction term (it has no "
            "ELBO). " + _MSE.format("each VAE on z = the posterior mean, the AE on its code")
        )
        middle = ["-ELBO epoch 0", "-ELBO final", f"NLL (k={final_k})", "recon", "MSE (eval)", "KL", "active units"]
    every = records.config.get("options", {}).get("eval_every") or 1
    if every > 1:
        said += (
            f" With a measurement every {every} epochs, the epochs to within reach are the first measured epoch "
            f"within it: a run may have got there up to {every - 1} epochs earlier."
        )
    header = ["start", *middle, near, "steps/s"]
    align = ["---" if name in ("start", near) else "---:" for name in header]
    lines = [said, "", "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in records.table():
        cells = [row["start"], *_cells(row, records.discrete), _reached(row), mean_sd(row["steps_per_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cells(row: dict[str, Any], discrete: bool) -> list[str]:
    """A row's values between its start and its epochs to within reach."""
    if discrete:
        return [
            mean_sd(row["epoch0"]),
            mean_sd(row["final"]),
            mean_sd_sig(row["mse"]),
            mean_sd(row["neg_elbo"]),
            mean_sd(row["rate_bits"], 1),
            mean_sd(row["perplexity"], 1),
            mean_sd(row["codes_used"], 1),
        ]
    return [
        mean_sd(row["epoch0"]),
        mean_sd(row["final"]),
        mean_sd(row["nll"]),
        mean_sd(row["recon"]),
        mean_sd_sig(row["mse"]),
        mean_sd(row["kl"]),
        mean_sd(row["active"], 1),
    ]


def _reached(row: dict[str, Any]) -> str:
    """A row's epochs to within reach: per seed, after their mean where every seed got there."""
    epochs = max(row["epochs"], default=0)
    reached = row["reached"]
    per_seed = ", ".join(epoch_text(e, epochs) for e in reached)
    if reached and all(e is not None for e in reached) and len(reached) > 1:
        return f"{mean_sd(reached, 1)} ({per_seed})"
    return per_seed or "-"


def _ae_vs_vae_section(records: Records, figures: Sequence[str]) -> list[str]:
    """The report's first section: what the columns are, the table, the verdict and the pictures."""
    ae_vs_vae = AeVsVae(records)
    rows = ae_vs_vae.table()
    axes = [a for a in columns(records) if rows and a.name in rows[0]]
    final_k = records.config.get("options", {}).get("final_k", "?")
    features = next((d.features for r in records.runs if r.axes for d in r.axes.samples.values() if d.features), None)
    dims = next((r.axes.latent_dims for r in records.runs if r.axes and r.axes.latent_dims), None)
    kind = ae_vs_vae.ex_post_kind()
    said = {
        "MSE (eval)": "**MSE**: held-out mean squared error per element in the data's units, in eval mode (the "
        "AE on its code, a VAE on z = its posterior mean), and with z sampled as in training (VAEs)",
        "PSNR (dB)": "**PSNR**, **SSIM**: of the eval-mode reconstructions",
        "NLL": f"**NLL**: the importance-weighted bound on -log p(x) with k = {final_k}, in nats per sample; for "
        "the AE, of the generative model density, then its decoder, then the likelihood, with a proposal "
        "centred on its code",
        "samples (own prior or density)": "**samples**: the kernel MMD² (Gretton et al. 2012) of decoded draws "
        f"against held-out data (features: {features}), from the row's prior or density"
        + (
            f"; **samples (ex-post {kind})**: a VAE's decoder on draws of a {kind} fitted to its training codes "
            "(Ghosh et al. 2020)"
            if kind
            else ""
        ),
        "latent to prior": "**latent to prior**: the MMD² of held-out codes against draws of that prior or "
        "density, in latent space",
        "active units": "**active units**: latent elements whose posterior mean varies over the data"
        + (f" (of {dims})" if dims else ""),
        "interpolation": "**interpolation**: the MMD² of decoded midpoints of straight lines between held-out "
        "codes against held-out data",
        "probe accuracy": "**probe accuracy**: a logistic regression on the training codes, scored on held-out codes",
        "anomaly AUROC": "**anomaly AUROC**: the AE scored by its reconstruction error, a VAE by its per-sample NLL",
        "steps/s": "**steps/s**: training steps per second",
    }
    higher = [a.name for a in axes if a.better == "higher"]
    lines = [
        "## AE vs VAE",
        "",
        "One row per model: the AE with each density fitted to its training codes (it samples by decoding draws "
        "of it), and each VAE start with its prior N(0, I); mean ± sd over the seeds. Lower is better"
        f"{', except ' + ', '.join(higher) if higher else ''}. **Bold**: better than every other row by more "
        f"than {times(BEYOND)} the standard error of the difference (paired per held-out sample where the "
        "records hold per-sample values; over seeds, at least the seeds' spread of the difference / sqrt(seeds)).",
        "",
        "| model | " + " | ".join(a.name for a in axes) + " |",
        "| --- | " + " | ".join("---:" for _ in axes) + " |",
    ]
    for row in rows:
        cells = []
        for axis in axes:
            values = row[axis.name]["values"]
            text = mean_sd_sig(values) if axis.digits is None else mean_sd(values, axis.digits)
            cells.append(f"**{text}**" if row[axis.name]["bold"] else text)
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {text}." for name, text in said.items() if any(a.name.startswith(name) for a in axes)]
    lines += ["", "### Verdict: AE vs VAE", ""]
    lines += [f"- {line}" for line in ae_vs_vae.verdict()]
    for name in figures:
        lines += ["", f"![{name}]({name})"]
    return [*lines, ""]


def _describe(config: dict[str, Any], stopped: str | None) -> list[str]:
    o = config.get("options", {})
    data = config.get("data", {})
    lines = [
        f"Model: {config.get('model')} ({config.get('parameters', 0):,} parameters), bottleneck "
        f"{config.get('bottleneck')} {config.get('latent_shape')}, traced with {config.get('tracer')}.",
        f"Data: {data.get('train')} training and {data.get('test')} held-out samples of shape "
        f"{config.get('input_shape')}; {_split_text(data.get('split'))}.",
        _loss_line(config),
        f"Starts: {', '.join(o.get('starts', ()))}; seeds {config.get('seeds')}; {o.get('epochs')} epochs of "
        f"{_steps_text(config.get('steps_per_epoch'), o)}, the same batch order and noise stream for every start of "
        "a seed.",
        f"Optimiser: {o.get('optimizer')}, lr {o.get('lr')}, schedule {o.get('schedule')}"
        + (
            f", linear warm-up over {o.get('lr_warmup')} steps"
            if o.get("lr_warmup")
            else ", linear warm-up over the first epoch"
            if o.get("lr_warmup") is None
            else ""
        )
        + ".",
        _measured_line(o, data.get("test")),
        f"Machine: {config.get('device')}, {config.get('threads')} torch thread(s), {config.get('world', 1)} "
        f"process(es); torch {config.get('torch')}, fxvae {config.get('fxvae')}.",
    ]
    if stopped:
        lines.append(f"Stopped early: {stopped}.")
    return lines


def _split_text(split: str | None) -> str:
    """The split as the config says it, except that data drawn from the user's own ``data`` is never called
    "never trained on": the AE checkpoint may have been trained on it (records older than the warning)."""
    if split is None or "never trained on" not in split:
        return str(split)
    drawn = split.replace(", never trained on", "").replace("never trained on", "").rstrip(", ")
    return f"{drawn}; the comparison's runs do not train on it, but the AE checkpoint may have been trained on it"


def _measured_line(options: dict[str, Any], held: int | None = None) -> str:
    """How the runs were measured: which epochs, on how many of the ``held`` held-out samples, with how many
    draws.

    >>> import textwrap
    >>> print(textwrap.fill(_measured_line({"k": 8, "final_k": 100, "eval_samples": 500, "eval_every": 5}, 10000)))
    Measured every 5 epochs on 500 of the 10000 held-out samples (a seeded
    subset, the same for every start and seed) with k = 8 posterior draws
    (and at epoch 0, before any step, and after the last); at the end on all
    10000 with k = 100.
    """
    every = options.get("eval_every") or 1
    when = "after every epoch" if every == 1 else f"every {every} epochs"
    before = "(and at epoch 0, before any step" + (")" if every == 1 else ", and after the last)")
    subset = options.get("eval_samples")
    on = (
        f" on {subset} of the {held} held-out samples (a seeded subset, the same for every start and seed)"
        if subset
        else ""
    )
    whole = f" on all {held}" if subset else ""
    if options.get("latent", "gaussian") != "gaussian":
        return (
            f"Measured on the held-out data {when} {before}{on} and again at the end{whole}; a quantised model's "
            "codes are deterministic, so nothing is sampled."
        )
    return (
        f"Measured {when}{on} with k = {options.get('k')} posterior draws {before}; at the end{whole} with "
        f"k = {options.get('final_k')}."
    )


def _loss_line(config: dict[str, Any]) -> str:
    o = config.get("options", {})
    latent = o.get("latent", "gaussian")
    if latent == "vq":
        return (
            f"Latent: vq, {o.get('codebook_size')} codes per position; loss = reconstruction + the quantiser's "
            "commitment term, in nats at half the reconstruction's Fisher information per sample; likelihood "
            f"{config.get('likelihood')}."
        )
    if latent == "fsq":
        levels = tuple(o.get("levels", ()))
        return f"Latent: fsq, levels {levels}; loss = reconstruction; likelihood {config.get('likelihood')}."
    return (
        f"Likelihood: {config.get('likelihood')}; loss = reconstruction + beta * KL with beta {o.get('beta')}"
        + (f", warmed up over {o.get('kl_warmup')} steps" if o.get("kl_warmup") else "")
        + (f", free bits {o.get('free_bits')}" if o.get("free_bits") else "")
        + "."
    )


def _steps_text(batches: Any, options: dict[str, Any]) -> str:
    """An epoch's optimiser steps: its batches, or with ``accumulate`` N the steps of N batches each.

    >>> _steps_text(10, {"batch_size": 32}), _steps_text(10, {"batch_size": 32, "accumulate": 4})
    ('10 steps (batch 32)', '3 optimiser steps of 4 batches of 32')
    """
    accumulate = options.get("accumulate", 1) or 1
    if accumulate == 1 or not isinstance(batches, int):
        return f"{batches} steps (batch {options.get('batch_size')})"
    return f"{-(-batches // accumulate)} optimiser steps of {accumulate} batches of {options.get('batch_size')}"
