"""Operations around the watcher: logs, redaction, metrics, health endpoint."""
