"""`python -m solo_deploy ...` is the same as the `solo-deploy` command."""
from .cli import main

main()
