"""Building blocks of the medvl models, one per module (e.g. `tribert.TriBERT`,
`report_tokenization.ReportBatchEncoder`). Nothing is imported here, so each component loads only what it needs."""
