"""ament_python package vpr_ros: the node (vpr_ros), the ROS-free core (vpr_core), training."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'vpr_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        (os.path.join('share', PACKAGE), ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*.yaml')),
        (os.path.join('share', PACKAGE, 'config', 'train'), glob('config/train/*.yaml')),
        (os.path.join('share', PACKAGE, 'config', 'integrations'),
         glob('config/integrations/*.yaml')),
    ],
    package_data={'vpr_core': ['assets/*']},
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='vpr_ros maintainers',
    maintainer_email='maintainers@vpr-ros.invalid',
    description='Visual place recognition for ROS 2: DINOv2 descriptors, hashed map search, '
                'pose priors with calibrated covariance.',
    license='MIT',
    extras_require={'test': ['pytest'], 'ray': ['ray[data]==2.60.0']},
    entry_points={
        'console_scripts': [
            'vpr = vpr_ros.cli:main',
            'vpr_node = vpr_ros.node:main',
        ],
    },
)
