"""The `sparknet` verbs: the parser and most verbs (main), `prepare` (prepare), `bench` (throughput) and
`doctor` (doctor)."""
