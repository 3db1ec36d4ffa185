"""`simdistill config show`: the resolved config, as YAML, with every field's comment."""

from __future__ import annotations

import typer

from simdistill.cli_common import ConfigOpt, SetOpt, load_cli_config, user_errors

config_app = typer.Typer(help="Show the configuration a command would run with.", no_args_is_help=True)


@config_app.command("show")
@user_errors
def config_show_cmd(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the config (--config, default the shipped demo, with every --set applied) as commented YAML.

    The output is itself a config file: save it, edit it and pass it back with --config.
    """
    from simdistill.config import DEFAULT_CONFIG_NAME, resolve_config
    from simdistill.config.describe import config_yaml

    cfg = load_cli_config(config, set_)
    source = resolve_config(config if config is not None else DEFAULT_CONFIG_NAME)
    header = f"simdistill config: {source}"
    if set_:
        header += "\noverrides: " + " ".join(set_)
    typer.echo(config_yaml(cfg, header=header), nl=False)
