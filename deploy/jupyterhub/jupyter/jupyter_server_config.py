"""Jupyter server settings of every server on the Hub.

JupyterHub 4.1 and later send ``Content-Security-Policy: frame-ancestors 'none'`` from single-user
servers, which keeps JupyterLab from showing formgrader in its frame (nbgrader #1870, #1947).
Allowing the server's own pages ('self') keeps other sites from framing it.
"""

c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)

c.ServerApp.tornado_settings = {"headers": {"Content-Security-Policy": "frame-ancestors 'self'"}}
