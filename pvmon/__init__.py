"""pvmon: a virtual machine monitor for paravirtualization ABI work.

Layers (one folder each): ``engine`` (x86-64 machine on Unicorn), ``dispatch``
(trap -> paravirt-op call), ``backends`` (one hypervisor ABI at one version),
``trace`` (recorded runs), ``replay`` (verify / cross-backend / diff), ``ui``.
"""

__version__ = "0.1.0"
