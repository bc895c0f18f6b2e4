"""``python -m daskrec`` and the ``daskrec`` command."""

import sys

from .allocator import relaunch_with_huge_pages


def run() -> None:
    """Run the command line in a process that has glibc's huge-page setting from its start.

    The command line is imported only after :func:`~daskrec.allocator.relaunch_with_huge_pages`
    (~0.25 s of imports that a relaunch would throw away).
    """
    relaunch_with_huge_pages()
    from .cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
