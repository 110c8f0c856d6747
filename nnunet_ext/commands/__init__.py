"""Sub-commands of `nnunet-ext`; each module exposes `register(subparsers)`."""
