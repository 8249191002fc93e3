# The serving image: Ray 2.60 (CUDA, Python 3.11) with serve-app and its `gpu` extra (vLLM 0.32).
# One image for the head and the GPU workers (cluster.yaml, deploy/kuberay/rayservice.yaml).
#
#   docker build -t registry.example.com/serve-app:0.1.0-ray2.60.0-py311-gpu .
#   docker push registry.example.com/serve-app:0.1.0-ray2.60.0-py311-gpu
#
# Another registry or tag: build and push under that name, then re-render the artifacts with
# `python -m serve_app.render --image NAME` (see deploy/README.md).
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/serve-app
COPY --chown=ray:users pyproject.toml ./
COPY --chown=ray:users serve_app ./serve_app
COPY --chown=ray:users deploy ./deploy
# ray[serve]==2.60.0 is already in the base image, so pip keeps it; boto3 lets the head of a
# `ray up` cluster launch AWS nodes.
RUN pip install --no-cache-dir ".[gpu]" "boto3>=1.34" \
 && python -c "import ray, serve_app, vllm; assert ray.__version__ == '2.60.0', ray.__version__"
