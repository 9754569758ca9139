"""ppdet-ext: RT-DETRv2, GFL tooling, shape-grouped deployment on top of paddledet 2.6.0.

The pinned runtime stack is installed by ``scripts/setup_env.sh`` from ``requirements/``;
``install_requires`` here names only what the code imports, without pins, so that
``pip install -e .`` never fights the lock.
"""
from setuptools import find_packages, setup

setup(
    name="ppdet-ext",
    version="0.1.0",
    description="RT-DETRv2 and shape-grouped batched deployment for PaddleDetection 2.6",
    python_requires=">=3.9,<3.12",
    # deploy/ installs as ppdet_ext_deploy: a distinctive import name, not the generic "deploy"
    packages=find_packages(include=["ppdet_ext", "ppdet_ext.*"])
    + ["ppdet_ext_deploy"] + ["ppdet_ext_deploy." + p for p in find_packages("deploy")],
    package_dir={"ppdet_ext_deploy": "deploy"},
    include_package_data=True,
    install_requires=["paddledet==2.6.0", "paddlepaddle", "numpy", "opencv-python", "PyYAML"],
    extras_require={
        # rknn-toolkit2 pulls torch and its own protobuf/onnx pins: keep it in its own venv
        # (scripts/setup_rknn_env.sh); this extra only documents the version.
        "rknn": ["rknn-toolkit2==2.5.0"],
    },
)
