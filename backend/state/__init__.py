"""The built-in Terraform/OpenTofu HTTP state backend: versions, locks and stack tokens.

``protocol.py`` speaks Terraform's ``http`` backend; ``api.py`` is the REST surface for people;
``service.py`` holds the rules; ``parse.py`` validates states as streams; ``tokens.py`` issues
and checks the per-stack credentials (docs/state.md).
"""
