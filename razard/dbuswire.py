"""dbus-fast's wire layer without its buses: what a blocking D-Bus client needs.

``import dbus_fast`` (and so any ``dbus_fast.<module>``: a submodule's package is
imported first) runs the package's ``__init__``, which loads its message bus base,
its service and proxy layers and introspection: asyncio (and with it ssl,
concurrent.futures), logging, xml, inspect's ast. That is about 45 ms of CPU, half of
what a ``razarctl status`` costs, and razarctl uses none of it.

This module imports only the pieces a blocking client uses, dbus-fast's own:
:class:`Message` (and its marshaller), the :class:`Unmarshaller`, the SASL EXTERNAL
authenticator, the address parser, the constants and errors. It does so by putting a
bare ``dbus_fast`` package (its search path, not its ``__init__``) in
``sys.modules`` while they load, then taking it out again: a later ``import
dbus_fast`` in the same process runs the real ``__init__``, which finds these
modules loaded and uses them (one ``Message`` class in the process). One trace is
left: a module loaded here is not an attribute of that later package (Python sets
the attribute only when it loads a submodule), so after ``import dbus_fast`` write
``from dbus_fast.message import Message`` (as dbus-fast's own modules do), not
``dbus_fast.message.Message``. Where dbus-fast is already imported (the daemon, a
test), its modules are used as they are and nothing of this happens.

The names below are dbus-fast's; its ``_private`` modules are used as its own buses
use them. ``tests/unit/test_ctl_wire.py`` checks this still loads no asyncio, and that
the whole package still imports after it.
"""

from __future__ import annotations

import sys
from importlib.machinery import PathFinder
from importlib.util import module_from_spec


def _load_wire_modules() -> None:
    """Import dbus-fast's wire modules under a bare ``dbus_fast`` package (see above)."""
    if "dbus_fast" in sys.modules:
        return
    spec = PathFinder.find_spec("dbus_fast")
    if spec is None or spec.submodule_search_locations is None:
        return  # the imports below raise ModuleNotFoundError as usual
    bare = module_from_spec(spec)  # the package's attributes and path; __init__ not run
    sys.modules["dbus_fast"] = bare
    try:
        import dbus_fast._private.address
        import dbus_fast._private.unmarshaller
        import dbus_fast.auth
        import dbus_fast.message  # noqa: F401  (and constants, errors, signature, ...)
    finally:
        if sys.modules.get("dbus_fast") is bare:
            del sys.modules["dbus_fast"]


_load_wire_modules()

# Loaded above: these find them in sys.modules (a module already imported is not
# looked up through its package).
from dbus_fast._private.address import parse_address  # noqa: E402
from dbus_fast._private.unmarshaller import Unmarshaller  # noqa: E402
from dbus_fast.auth import Authenticator, AuthExternal  # noqa: E402
from dbus_fast.constants import MessageFlag, MessageType  # noqa: E402
from dbus_fast.errors import AuthError, DBusError, InvalidAddressError  # noqa: E402
from dbus_fast.message import Message  # noqa: E402

__all__ = [
    "AuthError",
    "AuthExternal",
    "Authenticator",
    "DBusError",
    "InvalidAddressError",
    "Message",
    "MessageFlag",
    "MessageType",
    "Unmarshaller",
    "parse_address",
]
