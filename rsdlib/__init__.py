"""rsdlib: the library behind the Residual Speculative Decoding (RSD) workbench.

Importing ``rsdlib`` needs neither LIBERO nor a GPU; the simulator is imported only
where an environment is made (``rsdlib.libero``).
"""

from rsdlib.paths import REPO_ROOT
from rsdlib.seeding import seed_everything, seeded

__version__ = "0.1.0"
__all__ = ["REPO_ROOT", "__version__", "seed_everything", "seeded"]
