# pytester drives the plugin from the command line in the project's own tests.
pytest_plugins = ["pytester"]
