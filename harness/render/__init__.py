"""Renderers: a run's report for people and for tools. They read results and never change them.

`terminal` draws the live progress line and the ranked table with example failures (rich), and the
tables of ``stress compare`` and ``stress replay``; `html` writes the self-contained ``report.html``
(Jinja2, with charts from `svg`: inline SVG, no script, no network); `junit` writes JUnit XML, one
test case per variant, and `markdown` a summary for a pull request or a CI step. Each takes a
`harness.results.summary.RunReport`, so a report rebuilt from a run folder (``stress report``) looks
exactly like the one the run printed.

Entry points: `harness.render.terminal.print_report`, `harness.render.html.write_html`,
`harness.render.junit.write_junit`, `harness.render.markdown.write_markdown`.
"""
