// pushgate JavaScript client (IIFE build): placeholder until the client is built into clients/js/dist.
