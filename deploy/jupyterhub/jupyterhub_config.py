"""JupyterHub configuration of the ml-systems course (nbgrader's multi-course layout).

Who is who:

* **Students** (group ``nbgrader-<course>``) log in, fetch, work, submit and read feedback in their
  own JupyterLab through nbgrader's Assignments panel.
* **Instructors** (groups ``formgrade-<course>`` and ``nbgrader-<course>``) open the course's
  formgrader from Nbgrader > Courses in their own JupyterLab.
* **The grader account** (``grader-<course>``, an OS account, not a login) owns the course folder and
  the gradebook and runs the formgrader: a JupyterLab started by the Hub as the service ``<course>``
  with the course folder as its root.  Only ``formgrade-<course>`` may open it.

Every server (students', instructors' and the formgrader) reads the nbgrader and Jupyter server
settings in ``jupyter/`` next to this file (``JUPYTER_CONFIG_PATH``): the shared exchange, the
JupyterHub course list, each user's student id, and a Content-Security-Policy that lets JupyterLab
show formgrader in its own frame.  Students' and instructors' servers also read ``students/``,
which turns formgrader off there.

Start it as root (``LocalProcessSpawner`` switches to each user's OS account), from the course
repository, with its ``.venv/bin`` first on ``PATH``::

    jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

The values below come from the environment, with the defaults of a typical server; see the README,
"Deploying on JupyterHub".  The test ``tests/test_jupyterhub.py`` loads this file unchanged and
replaces only what a single test machine cannot have (``overlay_config`` in that module).
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the course's .venv/bin: jupyterhub-singleuser, nbgrader

# The course: its id (nbgrader's CourseDirectory.course_id in the course's nbgrader_config.py),
# the grader account that owns it, and where the course repository lives.
COURSE = os.environ.get("COURSE_ID", "ml-systems")
GRADER = f"grader-{COURSE}"
GRADER_HOME = Path(os.environ.get("COURSE_GRADER_HOME", f"/home/{GRADER}"))
COURSE_ROOT = Path(os.environ.get("COURSE_ROOT", str(GRADER_HOME / COURSE)))
# The shared exchange: writable by everyone (mode 0777), like /tmp; nbgrader creates the course's
# inbound/outbound/feedback folders with the right modes inside it.
EXCHANGE = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
# Local port of the formgrader service (the Hub's proxy forwards /services/<course>/ to it).
FORMGRADER_PORT = int(os.environ.get("COURSE_FORMGRADER_PORT", "9999"))

INSTRUCTORS = os.environ.get("COURSE_INSTRUCTORS", "instructor").split()
STUDENTS = os.environ.get("COURSE_STUDENTS", "").split()

# JupyterHub 5 and later let nobody in without an allow list (or allow_all).
c.Authenticator.allowed_users = set(INSTRUCTORS) | set(STUDENTS)

# Group names are nbgrader's contract: JupyterHubAuthPlugin takes a user's courses from the groups
# starting with "nbgrader-" (course materials) and "formgrade-" (grading).  The formgrader adds
# every student it grades to nbgrader-<course>, so students may also be added later by the API.
# The grader account belongs to formgrade-<course> too: the formgrader looks up the courses of the
# user it runs as.
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE}": {"users": [*INSTRUCTORS, GRADER]},
    f"nbgrader-{COURSE}": {"users": INSTRUCTORS + STUDENTS},
}

c.JupyterHub.load_roles = [
    # Open the formgrader service.
    {
        "name": f"formgrade-{COURSE}",
        "groups": [f"formgrade-{COURSE}"],
        "scopes": [f"access:services!service={COURSE}"],
    },
    # Find the course's formgrader (Nbgrader > Courses lists the services of a user's courses).
    {
        "name": f"nbgrader-{COURSE}",
        "groups": [f"nbgrader-{COURSE}"],
        "scopes": ["list:services", f"read:services!service={COURSE}"],
    },
    # What each user's server may do with its token (intersected with its owner's permissions):
    # JupyterHub's defaults, plus reading the owner's groups (nbgrader's course list and its
    # access check before fetch and submit) and the course's service (the Courses panel).
    {
        "name": "server",
        "scopes": [
            "users:activity!user",
            "access:servers!server",
            "read:users:groups!user",
            "list:services",
            f"read:services!service={COURSE}",
        ],
    },
    # The formgrader service reads its own account's courses and enrols each student it grades in
    # nbgrader-<course>, and nothing else.
    {
        "name": f"grader-{COURSE}",
        "services": [COURSE],
        "scopes": [
            f"read:users:groups!user={GRADER}",
            f"list:groups!group=nbgrader-{COURSE}",
            f"groups!group=nbgrader-{COURSE}",
        ],
    },
]

c.JupyterHub.services = [
    {
        "name": COURSE,
        "url": f"http://127.0.0.1:{FORMGRADER_PORT}",
        "command": [str(BIN / "jupyterhub-singleuser"), f"--ServerApp.root_dir={COURSE_ROOT}"],
        "user": GRADER,
        "cwd": str(COURSE_ROOT),
        # Instructors open it from the Courses panel without a second "Authorize access" page.
        "oauth_no_confirm": True,
        "environment": {
            "JUPYTERHUB_DEFAULT_URL": "/lab",
            # nbgrader's JupyterHubAuthPlugin needs a user name; the service acts as the grader.
            "JUPYTERHUB_USER": GRADER,
            # The grader's own Jupyter data (the python3-sealed kernelspec) and config.
            "HOME": str(GRADER_HOME),
            "JUPYTER_CONFIG_PATH": str(HERE / "jupyter"),
            "NBGRADER_EXCHANGE": EXCHANGE,
            # nbgrader shells out to alembic; the sealed kernel's launcher uses the venv's Python.
            "PATH": f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        },
    },
]

# Students' and instructors' servers: JupyterLab with nbgrader's Assignments and Courses panels.
c.Spawner.default_url = "/lab"
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.environment = {
    "JUPYTER_CONFIG_PATH": os.pathsep.join([str(HERE / "students"), str(HERE / "jupyter")]),
    "NBGRADER_EXCHANGE": EXCHANGE,
    "PATH": f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
}

# Listen on every interface behind TLS in production (set ssl_cert/ssl_key or a reverse proxy).
c.JupyterHub.bind_url = os.environ.get("JUPYTERHUB_BIND_URL", "http://:8000")
# configurable-http-proxy is installed by scripts/setup.sh into .venv/bin.
c.ConfigurableHTTPProxy.command = [str(BIN / "configurable-http-proxy")]

# The Hub's own database: SQLite (jupyterhub.sqlite in the working directory) by default.  For a
# large course use PostgreSQL (pip install psycopg2-binary in the venv first):
# c.JupyterHub.db_url = "postgresql://jupyterhub:PASSWORD@dbhost:5432/jupyterhub"
# nbgrader's gradebook is separate: CourseDirectory.db_url in the course's nbgrader_config.py.
