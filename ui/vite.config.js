// Vite builds the dashboard into dist/ (static files capsem-gateway loads at start). No CDN:
// every script, style and font is bundled here.
import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

export default defineConfig({
  plugins: [svelte()],
  base: "/",
  build: {
    outDir: process.env.CAPSEM_UI_OUT || "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
    assetsInlineLimit: 0,
  },
});
