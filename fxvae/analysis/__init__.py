"""Reading a captured graph: node helpers, the operator tables, the bottleneck search, outputs, width profiles."""
