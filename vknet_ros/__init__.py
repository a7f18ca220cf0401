"""ROS 2 front end of vknet: the perception node, message conversions and launch helpers.

The generated messages (``vknet_ros.msg``) are installed by the CMake build into site-packages, while the
sources may be imported from the repository. Extending ``__path__`` lets both halves of the package be
found whichever copy Python imports first.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
