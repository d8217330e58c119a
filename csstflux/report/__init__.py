"""Figures and self-contained HTML pages: the flat QA page, the nightly report and the model
evaluation reports."""
