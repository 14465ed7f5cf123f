"""The `layersync-hooks` command line: `cli` dispatches to one module per command (`demo`, `layouts`, `probe`)."""
