// pushgate JavaScript client (ES module build): placeholder until the client is built into clients/js/dist.
