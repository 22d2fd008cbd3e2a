"""`dagmirror deploy`, `history`, `rollback` and `promote`: validated, recorded writes to the environments of
one bucket (`s3://BUCKET/dags/<env>/...`), the other half of the mirror.

    deployer.Deployer: deploy | promote | rollback | history
      request.py   local files / another environment's live versions / a record -> DeployRequest
      runner.py    DeployRequest -> list -> validate (validate.py, airflow.py) -> plan (plan.py) -> settle
                   -> write (writer.py) -> record (record.py)
      bucket.py    every request: the store opened on first use, retried, in a bounded pool

Library use::

    from dagmirror.deploy import Deployer, load_deploy_config

    config = load_deploy_config(None, os.environ, {"bucket_url": "s3://acme-airflow/dags/"})
    async with Deployer(config) as deployer:
        report = await deployer.deploy([Path("dags/")], "staging")
"""

from dagmirror.config.deploy import DeployConfig, EnvPolicy, config_path, load_deploy_config
from dagmirror.deploy.deployer import Deployer
from dagmirror.deploy.record import DeployReport, FileResult

__all__ = [
    "DeployConfig",
    "DeployReport",
    "Deployer",
    "EnvPolicy",
    "FileResult",
    "config_path",
    "load_deploy_config",
]
