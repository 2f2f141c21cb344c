"""``msgflo-python MODULE.py ROLE [--iips JSON] [--broker URL]``"""

import importlib.util
import inspect
import os
import sys

from .participant import Participant, main as _main


def find_participant_classes(module):
    """Participant classes defined in ``module`` (subclasses first, then
    anything with ``send`` and ``process``, as the original looked for)."""
    own = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    subclasses = [c for c in own if issubclass(c, Participant) and c is not Participant]
    if subclasses:
        return subclasses
    return [c for c in own if hasattr(c, "send") and hasattr(c, "process")]


def load_module_file(path):
    name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.stderr.write("Usage: msgflo-python MODULE.py ROLE [--iips JSON] [--broker URL]\n")
        return 2
    path, role, rest = args[0], args[1], args[2:]
    if not os.path.exists(path):
        sys.stderr.write("msgflo-python: no such file: %s\n" % path)
        return 2
    classes = find_participant_classes(load_module_file(path))
    if not classes:
        sys.stderr.write("msgflo-python: no Participant class in %s\n" % path)
        return 2
    return _main(classes[0], role, argv=[role] + rest)


if __name__ == "__main__":
    sys.exit(main())
