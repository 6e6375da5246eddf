"""The L3 role: routers in ``qrouter-`` namespaces (``router.py`` builds, ``role.py`` applies)."""
