"""lipcli's built-in components, as plugins like any other: one subpackage per kind of component.

``architectures``, ``attacks``, ``datasets`` and ``defences`` are each their own plugin, declared in the
``lipcli`` entry-point group (``lipcli-architectures = "lipcli_builtins.architectures"``, ...), so a user can
block one kind by its entry-point name (``LIPCLI_BLOCK_PLUGINS=lipcli-attacks``) exactly as a third-party
plugin. They import from lipcli only its public plugin API, :mod:`lipcli.api`. This package itself imports
nothing, so loading one kind loads nothing of the others.
"""
