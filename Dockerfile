FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY store store
COPY agents agents
COPY graphs graphs
COPY runs runs
COPY api api
COPY evals evals
COPY bench bench
RUN pip install --no-cache-dir .
EXPOSE 8123
CMD ["interlock", "serve", "--host", "0.0.0.0", "--port", "8123"]
