"""The digits tasks live in the package (graphmerge.tasks) so `graphmerge demo` can use them."""
from graphmerge.tasks import *  # noqa: F401,F403
from graphmerge.tasks import __all__  # noqa: F401
