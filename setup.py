"""pip install for people who train, export or evaluate without ROS.

The ROS 2 side (generated messages, launch files) is built by CMakeLists.txt (colcon, or `make setup`).
The distribution is named ``vknet`` so that it never clashes with the ``vknet_ros`` metadata that the
rosidl build installs.
"""

from setuptools import find_packages, setup

setup(
    name="vknet",
    version="0.1.0",
    description="Video K-Net: online video panoptic segmentation and tracking, with a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vknet_ros", "vknet_ros.*", "vknet_model", "vknet_model.*", "vknet_data",
                                    "vknet_data.*", "vknet_eval", "vknet_eval.*", "training", "training.*"]),
    py_modules=["vknet_cli"],
    # Everything a command reads at run time ships inside the packages: model configs, the bundled model,
    # the node's parameter file, the RViz config and the DDS profile.
    package_data={"vknet_model": ["assets/*", "configs/*.yaml"], "vknet_ros": ["config/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "torch>=2.3",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "opencv-python-headless>=4.8",
        "pillow>=9.1",
        "simplejpeg>=1.6",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "mcap>=1.1",
    ],
    entry_points={"console_scripts": ["vknet = vknet_cli:main"]},
)
