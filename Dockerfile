# The worker on the official Node 24 image, as the image's non-root user.
FROM node:24-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY src ./src
USER node
EXPOSE 9464
# node itself, not `npm start`: npm does not pass SIGTERM on, and the worker
# drains its in-flight messages on SIGTERM. Node 24 runs the TypeScript
# sources directly. The same command as `npm start`: garbage collected on
# the main thread only (README, Run it).
CMD ["node", "--single-threaded-gc", "src/main.ts"]
