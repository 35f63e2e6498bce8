"""PORT: proxy distributions in robust training (Sehwag et al., ICLR 2022)."""

__version__ = "0.1.0"
