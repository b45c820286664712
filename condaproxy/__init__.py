"""condaproxy: an on-demand caching proxy for conda channels."""

__version__ = "0.1.0"
