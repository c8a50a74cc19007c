from watcher.cli.main import entry

entry()
