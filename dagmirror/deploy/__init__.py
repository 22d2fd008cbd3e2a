"""`dagmirror deploy`, `history`, `rollback` and `promote`: validated, recorded writes to the environments of
one bucket (`s3://BUCKET/dags/<env>/...`), the other half of the mirror.

    local files / live versions -> validate (validate.py, airflow.py) -> plan (plan.py) -> write -> record
                                   \\________________ runner.Deployer runs these ________________/

Library use::

    from dagmirror.deploy import Deployer, load_deploy_config

    config = load_deploy_config(None, os.environ, {"bucket_url": "s3://acme-airflow/dags/"})
    async with Deployer(config) as deployer:
        report = await deployer.deploy([Path("dags/")], "staging")
"""

from dagmirror.config.deploy import DeployConfig, EnvPolicy, config_path, load_deploy_config
from dagmirror.deploy.record import DeployReport, FileResult
from dagmirror.deploy.runner import Deployer

__all__ = [
    "DeployConfig",
    "DeployReport",
    "Deployer",
    "EnvPolicy",
    "FileResult",
    "config_path",
    "load_deploy_config",
]
