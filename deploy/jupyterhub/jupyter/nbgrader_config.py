"""nbgrader settings of every server on the Hub (students', instructors' and the formgrader's).

JupyterHub puts this folder on ``JUPYTER_CONFIG_PATH`` (deploy/jupyterhub/jupyterhub_config.py).
The course's own settings (course id, grading preprocessors, the sealed kernel) stay in the
course's ``nbgrader_config.py``, which the formgrader reads from the course folder.
"""

import os

from nbgrader.auth import JupyterHubAuthPlugin

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# The shared exchange, one folder per course inside it (several courses can share the Hub).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
c.Exchange.path_includes_course = True

# A user's courses are the JupyterHub groups nbgrader-<course> and formgrade-<course>.
c.Authenticator.plugin_class = JupyterHubAuthPlugin

# nbgrader names a submission after the OS user; use the Hub user instead, so that students who
# share one OS account (or whose OS name differs from their Hub name) are told apart.  Not in the
# formgrader service, which collects and grades everyone's submissions.
if os.environ.get("JUPYTERHUB_USER") and not os.environ.get("JUPYTERHUB_SERVICE_NAME"):
    c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
