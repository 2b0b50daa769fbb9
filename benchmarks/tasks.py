"""The digits tasks live in the package (graphmerge.tasks) so `graphmerge demo` can use them."""

from graphmerge.tasks import *
from graphmerge.tasks import __all__  # noqa: F401
