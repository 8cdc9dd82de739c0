"""Imported first by the package: fail clearly when a regular ``hermes`` package hides the namespace.

``hermes`` is a PEP 420 namespace shared by hermes-quiver, -aeriel, -stillwater and
-cloudbreak. The predecessor (ML4GW's ``ml4gw-hermes``) ships a regular
``hermes/__init__.py``; installed into the same environment it turns ``hermes`` into its own
package and the two overwrite each other's ``hermes/quiver`` and ``hermes/aeriel``.
"""

import hermes

_init = getattr(hermes, "__file__", None)
if _init is not None:
    raise ImportError(
        f"{__name__.rsplit('.', 1)[0]}: {_init} makes 'hermes' a regular package, which hides the "
        "'hermes' namespace package this library lives in. It is most likely ML4GW's hermes (PyPI "
        "ml4gw-hermes), which cannot be installed beside hermes-quiver/-aeriel/-stillwater/-cloudbreak: "
        "run `pip uninstall ml4gw-hermes`, then reinstall the hermes-* packages (their files under "
        "hermes/ may have been overwritten). See docs/migration.md."
    )
