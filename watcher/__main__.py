from watcher.cli import entry

entry()
