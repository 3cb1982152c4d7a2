"""`python -m components.promote`: the promote stage, as dvc.yaml runs it (in a fork of a warm server when
one is up: tfpipe/warm.py)."""

from tfpipe import warm


def main() -> None:
    # Imported here: a launcher whose stage a warm server runs imports nothing heavy.
    from components.promote.stage import main

    main()


warm.run_stage("promote", main)
