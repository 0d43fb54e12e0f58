"""Start vpr_node (a lifecycle node that configures and activates itself: autostart).

Launch arguments win over ``params_file``; their defaults are the node's defaults.
"""
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare('vpr_ros'), 'config',
                                          'vpr_node.yaml']),
     'node parameters (YAML); the arguments below override it'),
    ('mode', 'localize', 'localize (against map_dir), teach (record map_dir) or slam (loop '
                         'closure in this session; docs/loop_closure.md)'),
    ('weights', '', 'model checkpoint (.safetensors); empty = bundled model'),
    ('map_dir', '', 'map directory made by vpr build-map (or the new map in teach mode)'),
    ('image_topic', 'image', 'topic of the default camera "image" (remapped; compressed input '
                             'uses <topic>/compressed)'),
    ('image_topics', "['image']", 'several cameras: a YAML list of topics, e.g. '
                                  '"[front/image, rear/image]" (camera_to_base: 6 numbers '
                                  'per camera in params_file)'),
    ('map_frame', 'map', 'frame_id of every output (AMCL global_frame_id, the EKF world '
                         'frame)'),
    ('base_frame', 'base_link', 'robot frame whose pose the prior gives'),
    ('prior_frame_id', '', 'frame_id of ~/pose_prior only (empty = map_frame; rtabmap '
                           'global_pose wants base_link)'),
    ('namespace', '', 'namespace of the node'),
    ('use_sim_time', 'false', 'follow /clock (bag replay)'),
    ('log_level', 'info', 'log level: debug, info, warn, error'),
)


def generate_launch_description() -> LaunchDescription:
    """Declared arguments and one lifecycle node; no logic."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, default, text in ARGUMENTS]
    image_topic = LaunchConfiguration('image_topic')
    node = LifecycleNode(
        package='vpr_ros',
        executable='vpr_node',
        name='vpr_node',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'mode': ParameterValue(LaunchConfiguration('mode'), value_type=str),
                'weights': ParameterValue(LaunchConfiguration('weights'), value_type=str),
                'map_dir': ParameterValue(LaunchConfiguration('map_dir'), value_type=str),
                'image_topics': ParameterValue(LaunchConfiguration('image_topics'),
                                               value_type=List[str]),
                'map_frame': ParameterValue(LaunchConfiguration('map_frame'), value_type=str),
                'base_frame': ParameterValue(LaunchConfiguration('base_frame'), value_type=str),
                'prior_frame_id': ParameterValue(LaunchConfiguration('prior_frame_id'),
                                                 value_type=str),
                'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'),
                                               value_type=bool),
            },
        ],
        remappings=[('image', image_topic), ('image/compressed', [image_topic, '/compressed'])],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    return LaunchDescription([*arguments, node])
