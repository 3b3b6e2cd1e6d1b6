#!/bin/bash
set -euo pipefail
# The dashboard in the notebook: jupyter-server-proxy in the Jupyter server's own environment (not the kernel's),
# allowed to proxy the scheduler's host only; the kernel's distributed.dashboard.link points through it.
source /home/ec2-user/anaconda3/bin/activate JupyterSystemEnv
pip install --quiet @{jupyter_server_proxy}
source /home/ec2-user/anaconda3/bin/deactivate
# Merged into jupyter_server_config.json, keeping what is there: the server reads settings from that file, while
# jupyter_server_config.d only enables extensions (a setting there is ignored: tests/test_notebook_dashboard.py).
python3 - /home/ec2-user/.jupyter/jupyter_server_config.json '@{proxy}' <<'MERGE'
@{merge_setting}MERGE
chown -R ec2-user:ec2-user /home/ec2-user/.jupyter
# JupyterLab's Dask sidebar (dask-labextension) lists the platform: the server gets the kernel's environment and
# the extension's cluster factory (tests/test_notebook_dashboard.py runs the extension's manager with it).
mkdir -p @{drop_in_dir}
cat > @{drop_in} <<'UNIT'
[Service]
@{server_environment}
UNIT
systemctl daemon-reload
systemctl --no-block restart jupyter-server.service
sudo -u ec2-user -i <<'SCRIPT'
set -euo pipefail
aws s3 sync "s3://@{bucket}/notebooks" "$HOME/SageMaker/dask-platform"
aws s3 cp "s3://@{bucket}/notebook-env/requirements.txt" "$HOME/.dask-platform-constraints.txt"
aws s3 cp "s3://@{bucket}/notebook-env/@{wheel}" "$HOME/.dask-platform-dist/@{wheel}"
umask 077
mkdir -p "@{tls}"
aws secretsmanager get-secret-value --region @{region} --secret-id "@{tls_secret_arn}" \
  --query SecretString --output text > "@{tls}/secret.json"
for field in ca cert key; do
  python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "@{tls}/secret.json" "$field" \
    > "@{tls}/$field.pem"
done
rm -f "@{tls}/secret.json"
nohup bash -c 'python3 -m venv "$HOME/.dask-platform" \
  && "$HOME/.dask-platform/bin/pip" install --constraint "$HOME/.dask-platform-constraints.txt" \
       "$HOME/.dask-platform-dist/@{wheel}[@{kernel_extra}]" \
  && "$HOME/.dask-platform/bin/python" -m ipykernel install --user --name @{kernel_name} \
       --display-name "@{kernel_display_name}" @{kernel_environment}' \
  > "$HOME/dask-platform-setup.log" 2>&1 &
SCRIPT
# The factory's packages in the server's environment, at the kernel's pins except SageMaker's own Jupyter packages
# (dask-labextension needs JupyterLab 4, which the server has); then the server starts again with them. In the
# background: lifecycle scripts must finish within five minutes.
nohup bash -c 'source /home/ec2-user/anaconda3/bin/activate JupyterSystemEnv \
  && grep -iv "^jupyter" @{home}/.dask-platform-constraints.txt > /tmp/dask-platform-server-constraints.txt \
  && pip install --quiet --constraint /tmp/dask-platform-server-constraints.txt "@{dist}[@{lab_extra}]" \
  && systemctl restart jupyter-server.service' > /var/log/dask-platform-lab.log 2>&1 &
# Stops the instance after @{idle_minutes} idle minutes (client.notebookIdleMinutes; 0: never), checked every five
# minutes by cron with the instance's own python3 (components/notebook_idle.py).
cat > /usr/local/bin/dask-platform-idle-stop <<'IDLE'
@{idle_script}IDLE
chmod 0755 /usr/local/bin/dask-platform-idle-stop
if [ "@{idle_minutes}" -gt 0 ]; then
  echo "*/5 * * * * root /usr/bin/python3 /usr/local/bin/dask-platform-idle-stop --minutes @{idle_minutes} --name @{notebook_name} --region @{region} >> /var/log/dask-platform-idle.log 2>&1" \
    > /etc/cron.d/dask-platform-idle-stop
else
  rm -f /etc/cron.d/dask-platform-idle-stop
fi
