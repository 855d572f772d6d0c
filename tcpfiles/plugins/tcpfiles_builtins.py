"""The behaviours that ship with tcpfiles, found by ``getPlugins`` like any third-party one."""

from tcpfiles.chat.protocol import chat
from tcpfiles.echo.protocol import echo, upper
from tcpfiles.oneshot.protocol import oneshot
from tcpfiles.udp_echo.protocol import udp_echo

__all__ = ["chat", "echo", "oneshot", "udp_echo", "upper"]
