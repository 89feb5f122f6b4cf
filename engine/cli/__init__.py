"""The `sparknet` verbs: the parser (parser) and the dispatch (main); starting, resuming and stopping runs
(launch); the runs table (runs); export and evaluation (models); `prepare` (prepare), `bench` (throughput) and
`doctor` (doctor)."""
