"""fakedet: real vs AI-generated image detection on cached backbone embeddings."""
__version__ = "0.1.0"
