"""The bulk runner: every facet session of every patient of a whole export (docs/bulk.md).

Input discovery and line reading (`inputs`), routing each line to its patient or to the shared
reference store (`routing`, `store`), partitioning by patient to temporary files (`partition`),
the pure per-patient function both engines call (`patient`), the local engine with its worker
processes (`runner`), the output files (`outputs`), the Apache Spark engine (`spark`) and the
Bulk Data `$export` client (`export`). The command is `bulk` (`command`).
"""
