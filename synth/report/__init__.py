"""`synth report`: a dataset as one self-contained HTML file (`write_report`), with coverage maps of
the tool repository and the tasks (`coverage`), embeddings that need nothing downloaded
(`embeddings`) and the tables read from the dataset (`contents`)."""

from synth.report.embeddings import EmbeddingEndpoint, embed_texts
from synth.report.render import ReportSummary, write_report

__all__ = ["EmbeddingEndpoint", "ReportSummary", "embed_texts", "write_report"]
