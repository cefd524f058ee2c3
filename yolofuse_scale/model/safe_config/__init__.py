"""A model dictionary is data, never code: checked against allow-lists and a budget before anything uses it.

Ultralytics' ``parse_model`` (8.4) trusts its dictionary: it ``eval``s the ``activation`` string, looks a
module name up in its module's globals and calls what it finds with the row's arguments (there,
``torch_safe_load`` unpickles any file with ``weights_only=False``; ``check_requirements`` pip-installs),
and replaces a string argument with the parser's local variable of that name (else ``ast.literal_eval``).
A weights file loads with ``torch.load(weights_only=True)``, so its tensors are safe, but its
``model_yaml`` is plain data that reaches that parser; without this check a weights file, a checkpoint's
``run_meta.json`` or a ``--model FILE.yaml`` could run any Python expression when read.

Ultralytics 8.4.190 has an opt-in restricted mode (``ULTRALYTICS_SAFE_LOAD``, private ``_SafeLoad``): it
parses the activation and requires module names to be ``nn.Module`` classes, but still accepts every
``nn.Module`` the parser's namespace holds, is off unless set before Ultralytics is imported, and is
a private API. So every dictionary is checked here, whatever its origin (the built-in variants too,
one path for all), in two steps: ``schema.check_model_dict`` before anything copies, serialises
(``json.dumps``) or parses it, and ``size.check_model_size`` where the model is built. One concern per
module, each docstring stating its bounds and why (nothing is re-exported here: a caller imports a name
from the module that defines it):

- ``limits``: ``ModelConfigError`` (the one refusal, a user error), the bound on every number a
  dictionary may hold, and the bounded ``repr`` the messages quote a value with.
- ``budget``: ``check_budget``, the walk (without recursion) that refuses a dictionary past its shape
  budget: too many values, too deep, a long string, a non-finite number, an odd type.
- ``schema``: ``check_model_dict``, the first step: the budget, then the top-level keys, the module
  allow-list (derived from the installed Ultralytics) and each row's arguments (plain literals).
- ``activation``: ``parse_activation``, the ``activation:`` built from its parsed form (never ``eval``),
  and ``default_activation``, which hands it to Ultralytics' ``Conv`` while a model is built.
- ``size``: ``check_model_size``, the second step: the parameters, modules and layer sizes the model
  implies, counted by building it with Ultralytics' parser on PyTorch's ``meta`` device.

Not bounded: the memory of the activations, which grows with the image size and with chains of
upsampling layers (each one within its bound); a model within these bounds can still need more memory
than a machine has, as a real model at a large enough image size does.
"""
