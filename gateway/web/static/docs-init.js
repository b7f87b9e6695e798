// The API documentation page (/docs): Swagger UI, from the flask-swagger-ui package's assets,
// reading this gateway's own /openapi.json. No CDN; no inline script.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
