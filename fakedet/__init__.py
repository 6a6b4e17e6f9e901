"""fakedet: real vs AI-generated image detection on cached backbone embeddings."""
__version__ = "0.1.0"

_API = {"Detector": "detector", "BackboneConfig": "backbone_config", "fit": "workflow", "evaluate": "workflow",
        "compare": "workflow", "predict": "workflow", "extract": "extract", "make_head": "heads"}


def __getattr__(name: str):
    """Lazy access to the main API (``fakedet.fit`` ...) without importing torch or sklearn up front."""
    if name in _API:
        from importlib import import_module

        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
