"""Start vpr_node (a lifecycle node that configures and activates itself: autostart)."""
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
    ('weights', '', 'model checkpoint (.safetensors); empty = bundled model'),
    ('map_dir', '', 'map directory made by vpr build-map (or the new map in teach mode)'),
    ('image_topic', 'image', 'camera topic (raw; compressed input uses <topic>/compressed)'),
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
                'weights': ParameterValue(LaunchConfiguration('weights'), value_type=str),
                'map_dir': ParameterValue(LaunchConfiguration('map_dir'), value_type=str),
                'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'),
                                               value_type=bool),
            },
        ],
        remappings=[('image', image_topic), ('image/compressed', [image_topic, '/compressed'])],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
    )
    return LaunchDescription([*arguments, node])
