"""mf-convert's plugin module: adds the `convert` subcommand to `mfcore`."""
from mfcore import hookimpl


@hookimpl
def register_commands(cli):
    parser = cli.add_parser("convert", help="convert checkpoints between Hugging Face, Meta and MindFormers formats")
    parser.add_argument("src", help="source checkpoint (directory or file)")
    parser.add_argument("dst", help="destination directory")
    parser.set_defaults(func=_run)


def _run(args):
    from mfcore import MfcoreError

    raise MfcoreError("mfcore convert is not built yet")
