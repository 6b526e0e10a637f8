"""The task-independent machinery behind every paper table.

- ``table``: declaring a table (variants as config overrides, the paper's numbers as data);
- ``catalog``: finding every table (``ablations/<paper>/table*.py``);
- ``runner``: running one (each run trains and tests through LightningCLI and reports
  its task module's ``test_report``);
- ``results``: the results JSON schema, aggregation and validation;
- ``render`` / ``plots``: Markdown and bar chart from the JSON; ``render_benchmarks``: the benchmark's Markdown;
- ``publish``: writing JSON + Markdown + PNG, and the W&B summary run with its artifacts;
- ``provenance``: commit, dirty flag, library versions and machine, for tables and benchmarks alike.

Importing the package imports nothing heavy; import the submodules you need.
"""
